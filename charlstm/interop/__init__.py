"""Moving models in and out of charlstm: PyTorch state dicts and ONNX graphs.

    charlstm.interop.state_dict  export/import of CharRNN state dicts (.safetensors, .pt)
                                 and VOCAB.json; needs torch only for .pt files
    charlstm.interop.torch       CharRNN, the documented PyTorch module (needs torch)
    charlstm.interop.onnx        ONNX export and an onnxruntime step function
                                 (needs onnx, onnxruntime)

The submodules that need an optional extra import it when they are imported and
raise a one-line UserError saying what to install if it is missing, so this
package itself never imports torch or onnx.
"""
