"""Task heads: what sits on top of a recurrent network (a tagger with softmax or CRF, ...)."""
