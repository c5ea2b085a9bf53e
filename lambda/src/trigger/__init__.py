"""pushtrain trigger (AWS Lambda)."""
