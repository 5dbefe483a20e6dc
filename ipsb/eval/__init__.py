"""The FF++ / CelebA-HQ benchmark harness (DESIGN.md section 3; ``ipsb test --config lightning_configs/eval/*.yaml``).

``networks`` (the metric networks from config), ``adapters`` (toy stand-ins for pose / FID
features), ``methods`` (what produces the swaps: the data's own
swaps, an ipsb swapper, the toy manipulation), ``evaluator`` (:class:`EvaluationModule`, the
LightningModule that runs the metrics), ``table`` (the paper's table layout, markdown + JSON, with
the paper's numbers as reference rows). The synthetic toy FF++ tree is :mod:`ipsb.data.toy_ffpp`.
"""
