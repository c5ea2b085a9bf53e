output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "repository_name" {
  description = "Name of the trainer's ECR repository (repository variable ECR_REPOSITORY)."
  value       = aws_ecr_repository.this.name
}

output "repository_url" {
  description = "URL of the trainer's ECR repository, for docker push."
  value       = aws_ecr_repository.this.repository_url
}

output "cluster_name" {
  description = "Name of the ECS cluster the training tasks run in."
  value       = aws_ecs_cluster.this.name
}

output "task_family" {
  description = "Task definition family of the trainer (base revision, then one per pushed digest)."
  value       = aws_ecs_task_definition.this.family
}

output "base_task_definition_arn" {
  description = "ARN of the base task definition revision the trigger copies."
  value       = aws_ecs_task_definition.this.arn
}

output "container_name" {
  description = "Name of the trainer container in the task definition."
  value       = local.container_name
}

output "trigger_function_name" {
  description = "Name of the trigger Lambda function (repository variable TRIGGER_FUNCTION_NAME)."
  value       = aws_lambda_function.this.function_name
}

output "artifacts_bucket" {
  description = "Name of the artifacts bucket (repository variable ARTIFACTS_BUCKET)."
  value       = aws_s3_bucket.this.bucket
}

output "subnet_ids" {
  description = "IDs of the subnets training tasks run in."
  value       = [for subnet in aws_subnet.this : subnet.id]
}

output "task_security_group_id" {
  description = "ID of the training tasks' security group."
  value       = aws_security_group.tasks.id
}

output "assign_public_ip" {
  description = "Whether RunTask gives tasks a public IP (ENABLED in the public network mode)."
  value       = local.private_network ? "DISABLED" : "ENABLED"
}

output "trainer_log_group" {
  description = "CloudWatch log group of the training tasks."
  value       = aws_cloudwatch_log_group.trainer.name
}

output "trigger_log_group" {
  description = "CloudWatch log group of the trigger Lambda."
  value       = aws_cloudwatch_log_group.trigger.name
}

output "notifications_topic_arn" {
  description = "ARN of the SNS topic alarms and failed training tasks publish to."
  value       = aws_sns_topic.this.arn
}

output "trigger_failures_queue_url" {
  description = "URL of the queue holding trigger invocations that failed after their retries."
  value       = aws_sqs_queue.trigger_failures.url
}

output "events_dlq_url" {
  description = "URL of the queue holding events EventBridge could not deliver."
  value       = aws_sqs_queue.events_dlq.url
}

output "github_variables" {
  description = "Repository variables the workflows read that this stack defines (set them with `gh variable set`)."
  value = {
    AWS_REGION            = var.region
    ECR_REPOSITORY        = aws_ecr_repository.this.name
    TRIGGER_FUNCTION_NAME = aws_lambda_function.this.function_name
    ARTIFACTS_BUCKET      = aws_s3_bucket.this.bucket
    MODEL_NAME            = var.model_name
    PUSHTRAIN_GPU         = tostring(local.gpu_enabled) # "true": trainer-image also pushes <git sha>-cuda
  }
}
