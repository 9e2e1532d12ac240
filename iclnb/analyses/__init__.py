"""The notebooks that read other runs instead of running a model: compare_experiments lines up any finished runs of
any experiments and models; loo_heatmap and compare_loo_metrics read a loo or loo_multilayer run back.

They sit above :mod:`iclnb.ops` (they read runs through :mod:`iclnb.ops.tidy` and sweep manifests) and may use any
experiment family below; each follows the experiment protocol of :mod:`iclnb.experiments` (``PARAMS``, steps that
take data and return data), and the registry finds them by name. Their figures are in
:mod:`iclnb.analyses.figures`.
"""
