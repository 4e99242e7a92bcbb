# The whisperq worker image, for CPU or GPU instances, built in the stack's region (images
# are regional: the stack only finds images of its own region):
#   make wheel && packer init ami/ && packer build -var compute=cpu -var region=eu-west-1 ami/
# The Pulumi program (infra_pulumi/) picks the newest image named whisperq-<compute>-* whose
# `model` tag is its whisperq:model, and stops at preview when only other models' exist.

variable "compute" {
  type        = string
  default     = "cpu"
  description = "cpu (Ubuntu 24.04) or gpu (AWS Deep Learning Base image with the NVIDIA driver, Ubuntu 24.04)."
  validation {
    condition     = contains(["cpu", "gpu"], var.compute)
    error_message = "The compute must be cpu or gpu, as whisperq:compute."
  }
}

# No default: the image must be built where the stack runs (its aws:region).
variable "region" {
  type        = string
  description = "AWS region to build in: the stack's aws:region (pulumi config get aws:region)."
  validation {
    condition     = regex_replace(var.region, "^[a-z]{2}(-[a-z]+)+-[0-9]$", "") == ""
    error_message = "The region must be an AWS region such as eu-west-1: the stack's aws:region."
  }
}

variable "model" {
  type        = string
  default     = ""
  description = "Baked into the image: tiny.en or a Hugging Face name; empty = the stack's default for the compute kind (whisperq/defaults.py MODEL)."
  validation {
    condition     = substr(var.model, 0, 5) != "s3://"
    error_message = "The model cannot be an s3:// prefix: the worker cannot load those yet. Use a Hugging Face name (fetched once at build time) or tiny.en."
  }
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
  # The stack's default model per compute kind (whisperq/defaults.py MODEL): the stack picks
  # images by their model tag, so the defaults must be the same value.
  model = var.model != "" ? var.model : (var.compute == "gpu" ? "large-v3" : "small")
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

  # The build instance: IMDSv2 only, and SSH from this machine's public address only (the
  # temporary security group Packer creates). The image defaults to IMDSv2 as well.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support                              = "v2.0"
  temporary_security_group_source_public_ip = true

  tags = {
    Name    = local.image
    compute = var.compute
    model   = local.model
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
      "${path.root}/system-packages.sh",
      # the exact versions CI tests: provision.sh installs with them (pip -c)
      "${path.root}/../constraints.txt",
      "${path.root}/gpu-constraints.txt",
      "${path.root}/whisperq-worker.service",
      "${path.root}/whisperq-mark-unhealthy.service",
      "${path.root}/whisperq-gpu-devices.service",
      "${path.root}/mark-unhealthy.sh",
      "${path.root}/rsyslog-whisperq.conf",
    ]
    destination = "/tmp/whisperq-ami/"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "WHISPERQ_COMPUTE=${var.compute}",
      "WHISPERQ_MODEL=${local.model}",
      "WHISPERQ_WHEEL=/tmp/whisperq-ami/${basename(var.whisperq_wheel)}",
      # baking: OS updates now (never at a worker's boot), once cloud-init is done; a GPU
      # image's kernel, driver and CUDA packages held
      "WHISPERQ_BAKE=1",
    ]
    inline = ["bash /tmp/whisperq-ami/provision.sh"]
  }

  # The proof, as a worker boots the image: a reboot (the updated kernel, the driver
  # loaded afresh, no device node left over from the build), then check-image.sh runs the
  # worker's Python as the unit runs the worker (its user, NoNewPrivileges): on GPU,
  # nvidia-smi and CTranslate2 see the GPU, and one float16 transcription of a packaged
  # clip (examples/) must hold its word. A failure fails the build: no image.
  provisioner "shell" {
    execute_command   = "sudo -E bash '{{ .Path }}'"
    inline            = ["systemctl reboot"]
    expect_disconnect = true
  }

  provisioner "shell" {
    pause_before = "30s"
    inline       = ["mkdir -p /tmp/whisperq-check"]
  }

  provisioner "file" {
    sources = [
      "${path.root}/check-image.sh",
      "${path.root}/../examples/calls/support/call-0001.wav",
    ]
    destination = "/tmp/whisperq-check/"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    inline          = ["bash /tmp/whisperq-check/check-image.sh /tmp/whisperq-check/call-0001.wav internet"]
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    script          = "${path.root}/cleanup.sh"
  }
}
