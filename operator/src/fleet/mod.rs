//! The fleet planner: from a spec and a snapshot of pods to the next actions. No I/O.
