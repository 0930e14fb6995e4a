"""The pipeline: `mmlab compare` end to end (build every kernel, infer each variant, run
the plan interleaved, count barriers, predict, judge, report).
"""
