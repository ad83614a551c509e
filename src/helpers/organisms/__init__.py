"""Model organisms: a small Llama pretrained on two-format synthetic arithmetic, then SFT, then
post-trained from the SFT model with PPO, GRPO, DPO and Expert Iteration.

Modules: ``tasks`` (problem generator and gold solutions), ``grading`` (grader and format
classifier), ``tokenizer`` (character-level), ``registry`` (names, loading), ``storage`` (float16
delta weights), ``pretrain``, ``evaluate``, ``diagnostics`` (KL to base, first-token share),
``measure``, ``posttrain`` (SFT, EI, DPO, PPO, GRPO), ``build`` and ``publish`` (the whole set).
"""
