"""DeepAFx-ST (Steinmetz, Bryan and Reiss, JAES 2022), reimplemented for this harness: a spectrogram encoder
shared by input and reference, a controller MLP, and a six-band EQ + compressor whose settings it predicts,
trained end to end through a torch mirror of the harness's ``peq_comp`` (autodiff) or by SPSA through
pedalboard's ``peq_comp`` itself."""
