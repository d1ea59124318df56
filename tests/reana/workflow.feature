# Checks of a finished rootml run on REANA, for `reana-client test -w <workflow>` (reana-client
# 0.95+; the steps are those of reana-commons' Gherkin runner).
#
# As a physicist, I want to know that every stage of the workflow ran, on the inputs I uploaded,
# so that the model and its report come from the whole pipeline.

Feature: The rootml workflow runs to the end

    Scenario: The workflow finishes
        When the workflow execution completes
        Then the workflow status should be "finished"

    Scenario: The uploaded inputs are in the workspace
        When the workflow is finished
        Then the workspace should contain "inputs/input.yml"
        And the workspace should contain "inputs/model.py"
        And the workspace should contain "example/signal.root"
        And the workspace should contain "example/background.root"

    Scenario: The input check accepted the input and the file list
        When the workflow is finished
        Then the workspace should contain "check/inputs.json"
        And the file "check/inputs.json" should include "signal.root"
        And the file "check/inputs.json" should include "background.root"

    Scenario: Every input file was fetched and described
        When the workflow is finished
        Then the workspace should contain "fetch_0/fetch.json"
        And the workspace should contain "fetch_1/fetch.json"
        And the workspace should contain "specs_0/file-specs.json"
        And the workspace should contain "specs_1/file-specs.json"

    Scenario: The merge wrote one feature layout and the preprocess batches
        When the workflow is finished
        Then the workspace should contain "merge/layout.json"
        And the workspace should contain "merge/batches.yml"
        And the workspace should contain "preprocess_0/shards"

    Scenario: Training used the uploaded model
        When the workflow is finished
        Then the job logs for the "train" step should contain "inputs/model.py"

    Scenario: The workflow ends in reasonable time
        When the workflow is finished
        Then the workflow run duration should be less than 60 minutes
