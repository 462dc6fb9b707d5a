"""Validation: run the same input through every framework and compare with the numpy reference.

``validator`` drives a run; ``framework_run`` / ``isolated`` run each framework (in a child process for
big models); ``comparison``, ``results`` and ``report`` measure and present; ``artifacts`` checks files
given with ``--against``; ``oracles`` adds OpenCV as an independent reference; ``preprocess`` feeds
photos the way Caffe did. Named ``validation`` because ``caffe2x.validate`` is the API function.
"""
