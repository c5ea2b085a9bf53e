# The trainer image repository. Tags are immutable: a tag (the git sha) names one image
# forever, and the trigger pins every run to the image digest anyway.

resource "aws_ecr_repository" "this" {
  name                 = local.repository_name
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.destroy_with_data

  image_scanning_configuration {
    scan_on_push = true
  }

  # The AWS-managed aws/ecr key: encryption under KMS at no key cost.
  encryption_configuration {
    encryption_type = "KMS"
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name

  # Images are ~1-2 GB (PyTorch); storage is $0.10/GB-month, so old images are expired.
  # Every published model records its image digest; re-pull an old one from the manifest's git sha.
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images (interrupted pushes, replaced manifests) after a day"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 1
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the ${var.ecr_keep_images} most recent images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}
