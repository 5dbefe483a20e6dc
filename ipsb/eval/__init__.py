"""The FF++ / CelebA-HQ benchmark harness (docs/evaluation.md; ``ipsb test --config lightning_configs/eval/*.yaml``).

``networks`` (the metric networks from config, and the named presets ``reliableswap`` / ``clean``),
``deep3d_aligned`` (Deep3D's regressor behind its own 5-point alignment), ``adapters`` (toy stand-ins for pose / FID
features), ``methods`` (what produces the swaps: the data's own
swaps, an ipsb swapper, the toy manipulation), ``swap_measures`` (the one implementation of measuring
swaps: a results row's metrics, their update from a batch of pairs, the row; shared by ``ipsb test``, the
training-time :class:`~ipsb.callbacks.swap_evaluation.SwapEvaluation` callback and the stages' per-step
errors), ``basis_measures`` (explained energy, identity step per attribute step), ``evaluator``
(:class:`EvaluationModule`, the LightningModule that runs the metrics), ``table`` (the paper's table layout, markdown + JSON, with
the paper's numbers as reference rows). The synthetic toy FF++ tree is :mod:`ipsb.data.toy_ffpp`.
"""
