"""Lightning callbacks that write the run folder (file names: ``medrepro.core.run_folder``).

They do not know each other and work in any order. Each takes what it writes from
explicit interfaces: the batches and the step outputs, the metrics the module logs, the
module's ``class_names``, the data module, and the run folder's files. Writers finish a
file by the end of a loop (``metrics.csv`` by ``on_train_end``, ``predictions.csv`` by
``on_test_epoch_end``); readers read it only after that (``on_fit_end``, ``on_test_end``).
"""
