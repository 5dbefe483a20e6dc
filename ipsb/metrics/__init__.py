"""Evaluation metrics (torchmetrics), exact under DDP through per-sample states de-duplicated by index.

IDRetrieval / IDSimilarity (identity), PoseError (HopeNet), ExpressionError (Deep3D), FID.
"""
from ipsb.metrics.expression_error import ExpressionError
from ipsb.metrics.fid import FID
from ipsb.metrics.id_retrieval import IDRetrieval, IDSimilarity
from ipsb.metrics.pose_error import PoseError, hopenet_degrees

__all__ = ["ExpressionError", "FID", "IDRetrieval", "IDSimilarity", "PoseError", "hopenet_degrees"]
