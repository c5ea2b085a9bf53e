"""The local pipeline behind `make demo`: pushtrain's real trigger and trainer against AWS emulated by moto.

The Terraform reader (`tfread`, shared with the linter) reads names and settings from `terraform/`;
`emulator` runs moto and
provisions it; `events` builds and matches the events AWS would send; `runner` runs a started ECS
task as a local process (or a container); `pipeline` strings them into the demo and its scenarios.
"""
