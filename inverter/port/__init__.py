"""Converting published pretrained encoders into inverter's encoder format.

`python -m inverter.port SOURCE --out DIR` reads a pretrained network file
(Caffe .caffemodel, torchvision .pth state dict, the bvlc_alexnet.npy dict) and
writes encoder weights that `config.encoder.weights` accepts. Each file format
is one module here that registers a `Format` in `common.FORMATS`.
"""
