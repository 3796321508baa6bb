"""The paper's experiments: one module per chapter group, built on the core.

Import each from its module; nothing is imported here.

- :mod:`~hesslab.experiments.profiles`: every per-profile setting (sizes, Hessian batches,
  Lanczos, training budgets), the one table;
- :mod:`~hesslab.experiments.models`, :mod:`~hesslab.experiments.data`,
  :mod:`~hesslab.experiments.batches`: the paper's model families at a selectable size,
  offline data, and the batches each model is trained and measured on;
- :mod:`~hesslab.experiments.training`: training runs (AdamW, SGD, sign methods, per-block rates);
- :mod:`~hesslab.experiments.mlp_hessian`: Figure 2, the explicit Hessian of a tiny MLP;
- :mod:`~hesslab.experiments.full_spectra`: Figure 1, full-Hessian spectra over training;
- :mod:`~hesslab.experiments.heterogeneity`: Figures 3–4 and Table 1, blockwise spectra and JS⁰;
- :mod:`~hesslab.experiments.gap`: the Adam–SGD gap per model;
- :mod:`~hesslab.experiments.knob`: Figure 5, the heterogeneity knob (the man-made MLP) and the MLP-mixer;
- :mod:`~hesslab.experiments.pretraining`, :mod:`~hesslab.experiments.finetuning`: the book's
  pretrained GPT-2 and Figure 6, pretrained vs from scratch;
- :mod:`~hesslab.experiments.js0_gap`: Figures 3 and 7 from the JS⁰ and gap tables;
- :mod:`~hesslab.experiments.sign_methods`: the companion paper (Tomihari & Sato), gradient
  heterogeneity, sign-based optimisers and layer-norm placement;
- :mod:`~hesslab.experiments.rescue`: beyond the papers, SGD with a learning rate per block;
- :mod:`~hesslab.experiments.diagnose`: ``hesslab diagnose``, block heterogeneity of any model;
- :mod:`~hesslab.experiments.verdicts`: the rules of every verdict (margins over seeds);
- :mod:`~hesslab.experiments.quadratic`: Cases 1–4, quadratic problems, optimisers, theory;
- :mod:`~hesslab.experiments.tiny_problems`, :mod:`~hesslab.experiments.methods`,
  :mod:`~hesslab.experiments.hvp_costs`: exact checks and costs of the methods chapter.

What the papers specify, what is unverified and which choice the book makes are stated per
figure in the book's reproduction notes (``book/reproduction.md``); an "unverified" in a
docstring here refers to that page.
"""
