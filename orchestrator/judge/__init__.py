"""The judging stage: the comparison model (kernels, metrics, correctness, model
predictions; results.json and its schema), statistics, and the attribution of predicted
changes to upstream features. In: results and predictions. Out: an analysed Comparison
with a verdict.
"""
