"""`--method steer`, the training-free baseline, as one package.

hooks.py: the steering hooks, the language read-off and the saved artifact (OUT/steering);
measure.py: choosing the strength by measurement, the steered NLL, read-off accuracy;
method.py: the Method the registry runs.
"""

from lensml.methods.steer.hooks import SteerConfig, Steering, SteeringHandle, read_off, steering_only
from lensml.methods.steer.method import SteerMethod

__all__ = ["SteerConfig", "SteerMethod", "Steering", "SteeringHandle", "read_off", "steering_only"]
