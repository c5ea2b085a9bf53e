"""pushtrain trigger (AWS Lambda): turns ECR pushes, Spot interruptions and retrain requests into
digest-pinned, exactly-once ECS RunTask calls. Entry point: `trigger.handler.lambda_handler`."""
