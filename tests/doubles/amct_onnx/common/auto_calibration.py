"""TEST DOUBLE of ``amct_onnx.common.auto_calibration`` (tests/doubles/README.md): the evaluator base class
as AMCT's source defines it (github.com/hicann/amct ``common/auto_calibration/auto_calibration_evaluator_base.py``):
the three methods a subclass must implement raise NotImplementedError."""


class AutoCalibrationEvaluatorBase:
    """The base class of the evaluator ``accuracy_based_auto_calibration`` takes."""

    def __init__(self):
        pass

    def calibration(self, model):
        """Run at least create_quant_config's batch_num batches through ``model`` (an ONNX file)."""
        raise NotImplementedError

    def evaluate(self, model):
        """The metric of ``model`` (an ONNX file), e.g. top-1."""
        raise NotImplementedError

    def metric_eval(self, original_metric, new_metric):
        """(whether new_metric is acceptable against original_metric, the loss)."""
        raise NotImplementedError
