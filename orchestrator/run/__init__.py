"""The run stage: plans (what to run, how often), the runner that boots each kernel on a
target and runs the plan's entries, and the result store (one JSON per run, written as
it arrives, resumable). In: Artifacts, a plan, a target. Out:
results/<kernel>/<entry>/r<N>.json.
"""
