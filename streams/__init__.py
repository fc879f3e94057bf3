"""The streams side: the pure presence core and the faust-streaming workers around it."""
