"""whisperq's AWS deployment as Pulumi ComponentResources."""
