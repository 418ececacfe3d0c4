"""Agents that learn where to look: RAM with REINFORCE, PPO policies, full-view baselines."""
