"""Local runtimes: what runs an activity's commands on a local provider."""
