"""Plumbing for the course notebooks, one module per concept (the lessons live in notebooks/).

- Set-up: ``config`` (the environment variables), ``environment`` (Colab set-up, versions,
  accelerator), ``distribute`` (the ``tf.distribute`` strategy, batch size, mixed precision).
- Data: ``download`` (the dataset registry; cached, verified, safe downloads; images by URL),
  ``datasets`` (CamVid and Oxford-IIIT Pets as ``tf.data`` pipelines), ``m2nist`` (the
  assignment's data and fixed split), ``synthetic`` (quick mode's generated data).
- Models and results: ``models`` (notebook 1's VGG-16 encoder), ``metrics`` (the one IoU and
  Dice), ``viz`` (palettes, panels, curves, browsers, detections).
- Notebook 3: ``detection`` (Mask R-CNN outputs to instance masks, scoring a detector),
  ``coco`` (the COCO label map, COCO mask AP), ``mask_rcnn`` (the small Mask R-CNN: model,
  losses, training; its weights in ``weights/``), ``mask_rcnn_export`` (it in the TF Hub
  format, cached; which model notebook 3 loads; its command line), ``scenes`` (its generated
  scenes), ``standin`` (the tests' rule-based stand-in model).
- The assignment: ``assignment`` (exercise checks), ``grading`` (the grader, as the
  notebook calls it; everything else about grading is in the ``grader`` package: the checks
  of a model file, the workers, class tables and feedback, private test sets),
  ``student_notebook`` (generates the student notebook from the solution).
- Notebooks as code: ``notebook_code`` (functions and exercise blocks out of a notebook),
  ``run_notebooks`` (headless runs).
"""
