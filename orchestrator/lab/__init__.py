"""The lab: an inventory of SSH boards, leases, one worker per board, nightly runs and
their comparison reports.
"""
