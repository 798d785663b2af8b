"""RunReport: the run's report page, a pipeline step so that both runners make the same one
(the Kubeflow UI shows it on the run page; the local CLI copies it into the run folder)."""
