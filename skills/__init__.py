"""The ml-expert skill for agents (skills/ml-expert/SKILL.md), shipped as package data."""
