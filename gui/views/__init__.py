"""View classes over Flet controls. Each takes the ChatController it shows; none touches the
network: every operation goes through the controller."""
