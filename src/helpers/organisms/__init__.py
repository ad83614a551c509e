"""Model organisms: a tiny Llama pretrained on two-format synthetic arithmetic, then post-trained.

Modules: ``tasks`` (problem generator), ``safe_eval`` (arithmetic evaluator), ``grading`` (grader and
format classifier), ``tokenizer`` (character-level), ``registry`` (committed models), ``pretrain``,
``evaluate``, ``posttrain`` (SFT, EI, DPO, PPO, GRPO) and ``build`` (regenerates the whole set).
"""
