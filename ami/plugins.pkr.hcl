# Read by current Packer (`packer init ami/`); kept apart from the template because
# Packer 1.6 (Debian's, used by the checks) does not know this block.
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}
