"""The common trainer used by every stage (vae, teacher, student)."""
