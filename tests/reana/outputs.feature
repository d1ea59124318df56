# Checks of the outputs a physicist uses from a finished rootml run on REANA, for
# `reana-client test -w <workflow>` (reana-client 0.95+; reana-commons' Gherkin steps).
#
# As a physicist, I want the trained model bundle, its evaluation and the proof that the
# TFaaS server serves it, so that I can use the model and judge it.

Feature: The rootml outputs

    Scenario: All outputs listed in reana.yaml are in the workspace
        When the workflow is finished
        Then all the outputs should be included in the workspace
        And the workspace should contain "train/bundle"
        And the workspace should contain "evaluate/report"

    Scenario: The model bundle holds what TFaaS and rootml serve load
        When the workflow is finished
        Then the workspace should contain "train/bundle/params.json"
        And the workspace should contain "train/bundle/model.onnx"
        And the workspace should contain "train/bundle/model.keras"
        And the workspace should contain "train/bundle/saved_model.pb"
        And the workspace should contain "train/bundle/variables"
        And the workspace should contain "train/bundle/layout.json"
        And the workspace should contain "train/bundle/provenance.json"
        And the file "train/bundle/params.json" should include "rootml_sample"

    Scenario: The evaluation reports the test AUC
        When the workflow is finished
        Then the workspace should contain "evaluate/report/metrics.json"
        And the file "evaluate/report/metrics.json" should include "auc"
        And the file "evaluate/report/metrics.json" should include "accuracy"
        And the workspace should contain "evaluate/report/report.html"
        And the file "evaluate/report/report.html" should include "<html"

    Scenario: The model was published to the TFaaS server and answered
        When the workflow is finished
        Then the workspace should contain "publish/receipt.json"
        And the file "publish/receipt.json" should include "rootml_sample"
        And the file "publish/receipt.json" should include "max_abs_difference"
        And the file "publish/receipt.json" should include "verified"

    Scenario: The run records its provenance, for rootml replay
        When the workflow is finished
        Then the workspace should contain "provenance/provenance.json"
        And the file "provenance/provenance.json" should include "rootml-provenance/1"
        And the file "provenance/provenance.json" should include "sha256"
        And the file "provenance/provenance.json" should include "train/bundle/model.onnx"
