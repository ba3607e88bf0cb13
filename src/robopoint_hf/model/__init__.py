"""What a Hub folder carries: configuration, image processing, processing, modeling, pipeline, prompt templates
and the answer grammar. The files import only torch, transformers, numpy, PIL and each other (relatively), because
the save path copies them next to the weights for ``trust_remote_code`` users."""
