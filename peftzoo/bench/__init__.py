"""Benchmarking: tasks, budgets, the one training loop, result store, runner and leaderboard."""
