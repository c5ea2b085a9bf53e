provider "aws" {
  region = var.region

  # Every taggable resource gets these; resources add only a Name where it helps.
  default_tags {
    tags = local.tags
  }
}
