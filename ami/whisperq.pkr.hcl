# The whisperq worker image, for CPU or GPU instances:
#   packer init ami/ && packer build -var compute=cpu -var whisperq_wheel=dist/whisperq-0.1.0-py3-none-any.whl ami/
# The Pulumi program (infra_pulumi/) picks up the newest image named whisperq-<compute>-*.

variable "compute" {
  type        = string
  default     = "cpu"
  description = "cpu (Ubuntu 24.04) or gpu (AWS Deep Learning Base image with the NVIDIA driver, Ubuntu 24.04)."
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "model" {
  type        = string
  default     = "distil-large-v3"
  description = "Baked into the image: tiny.en, a Hugging Face name, or s3://bucket/prefix."
}

variable "instance_type" {
  type        = string
  default     = ""
  description = "Build instance; empty picks c6a.xlarge (cpu) or g4dn.xlarge (gpu)."
}

variable "whisperq_version" {
  type    = string
  default = "0.1.0"
}

variable "whisperq_wheel" {
  type        = string
  default     = "dist/whisperq-0.1.0-py3-none-any.whl"
  description = "The wheel `make wheel` builds."
}

locals {
  timestamp = regex_replace(timestamp(), "[- TZ:]", "")
  image     = "whisperq-${var.compute}-${var.whisperq_version}-${local.timestamp}"
  build_instance = var.instance_type != "" ? var.instance_type : (
    var.compute == "gpu" ? "g4dn.xlarge" : "c6a.xlarge"
  )
  # Ubuntu 24.04 both: Python 3.12 (constraints.txt's versions need Python >= 3.11;
  # the 22.04 images have 3.10)
  base_image_name  = var.compute == "gpu" ? "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *" : "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
  base_image_owner = var.compute == "gpu" ? "amazon" : "099720109477"
  root_volume_gb   = var.compute == "gpu" ? 80 : 30
}

source "amazon-ebs" "worker" {
  region        = var.region
  instance_type = local.build_instance
  ami_name      = local.image
  ssh_username  = "ubuntu"

  source_ami_filter {
    owners      = [local.base_image_owner]
    most_recent = true
    filters = {
      name                = local.base_image_name
      architecture        = "x86_64"
      virtualization-type = "hvm"
    }
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = local.root_volume_gb
    volume_type           = "gp3"
    throughput            = 125
    iops                  = 3000
    encrypted             = true
    delete_on_termination = true
  }

  # IMDSv2 is enforced where it matters, on the workers' launch template (infra_pulumi/);
  # metadata_options here would not pass the checks' Packer 1.6.

  tags = {
    Name    = local.image
    compute = var.compute
    model   = var.model
    version = var.whisperq_version
  }
}

build {
  sources = ["source.amazon-ebs.worker"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/whisperq-ami"]
  }

  provisioner "file" {
    sources = [
      var.whisperq_wheel,
      "${path.root}/provision.sh",
      # the exact versions CI tests: provision.sh installs with them (pip -c)
      "${path.root}/../constraints.txt",
      "${path.root}/whisperq-worker.service",
      "${path.root}/rsyslog-whisperq.conf",
      "${path.root}/cloudwatch-agent.json",
      "${path.root}/cleanup.sh",
    ]
    destination = "/tmp/whisperq-ami/"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "WHISPERQ_COMPUTE=${var.compute}",
      "WHISPERQ_MODEL=${var.model}",
      "WHISPERQ_WHEEL=/tmp/whisperq-ami/${basename(var.whisperq_wheel)}",
    ]
    inline = [
      "bash /tmp/whisperq-ami/provision.sh",
      "bash /tmp/whisperq-ami/cleanup.sh",
    ]
  }
}
