"""pushtrain trainer."""
