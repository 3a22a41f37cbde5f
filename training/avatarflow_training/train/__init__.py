"""Training the diffusion motion engine on a built dataset: the network's training examples
(``windows``), cut from a clip's labels exactly as a session builds the network's inputs."""
