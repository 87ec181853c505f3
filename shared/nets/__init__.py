"""Networks both sides agree on: AlexNet-style trunks, torchvision teachers, pool5 geometry."""
