"""One-shot parametric EQ style transfer (Mimilakis, Bryan and Smaragdis, ICASSP 2020), reimplemented.

A Siamese CNN embeds the input's and the reference's spectrograms with shared weights, a convolution compares the
two embeddings, and two feed-forward layers classify each ``peq4`` parameter into ``D`` discrete values. The
prediction is an ordinary normalised ``params01`` estimate, rendered with the harness's ``peq4``.

``model`` holds the network and the discretisation (torch only); ``system`` the harness-facing System.
"""
