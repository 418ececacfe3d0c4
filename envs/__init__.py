"""Gymnasium environments that show images through glimpses (see envs.glimpse_env)."""
