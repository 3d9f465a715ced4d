"""Pieces of ``benchmarks/pretrain_d90.py``: the in-domain corpus (``corpus``), masked-LM pre-training with
resumable checkpoints (``mlm``), and the curve's report (``report``)."""
