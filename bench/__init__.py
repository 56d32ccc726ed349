"""cc-hub bench: verify every claim of the model index by measuring it.

Modules, one job each:

* ``checks/``      one module per check (params, flops, filesize, data-config, accuracy, throughput): claim vs measurement
* ``flops``        fvcore and torch.utils.flop_counter counts
* ``accuracy``     ImageNet val layouts, exactly-once sharded evaluation (library code; torchrun runs ``-m bench``)
* ``throughput``   images/s timing (CPU perf_counter; CUDA events, AMP, channels_last)
* ``distributed``  torchrun process-group plumbing (gloo on CPU, nccl on CUDA)
* ``models``       the only door to cc_models (models, transforms, weight and release files)
* ``env``          what a run measured on: commit, torch build, threads, allocator, machine fingerprint
* ``store``        the results store (runs/<run_id>.json + results.csv; format: registry.results_schema), locked
* ``publish``      runs into the published store, docs regenerated from it under its lock (``cc-bench publish``)
* ``report``       the printed table, notes and verdict; the JSON report
* ``runner``       checks over models, saving after each model
* ``options``      the options ``run`` and ``compare`` share (one parent parser)
* ``cli``          ``cc-bench`` (``python -m bench``, also under torchrun)
"""
