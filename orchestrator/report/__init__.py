"""The report stage: the HTML report (autoescaped Jinja templates) and JUnit XML of an
analysed Comparison.
"""
