"""Deployment: systemd units, provisioning and IAM policy, `offsite check`."""
