"""What the course notebooks import, one module per concept (the lessons live in notebooks/).

- Set-up: ``config`` (the environment variables), ``environment`` (Colab set-up, versions,
  accelerator), ``distribute`` (the ``tf.distribute`` strategy, batch size, mixed precision).
- Data: ``download`` (the dataset registry; cached, verified, safe downloads; images by URL),
  ``datasets`` (CamVid, Oxford-IIIT Pets and M2NIST as ``tf.data`` pipelines), ``m2nist`` (the
  assignment's data and fixed split), ``synthetic`` (quick mode's generated data).
- Models and results: ``models`` (notebook 1's VGG-16 encoder), ``metrics`` (the one IoU and
  Dice, NumPy), ``keras_metrics`` (the mean-IoU metric and the Dice loss for Keras), ``viz``
  (palettes, panels, curves, browsers, detections).
- Notebook 3: ``detection`` (Mask R-CNN outputs to instance masks, scoring a detector),
  ``coco`` (the COCO label map, COCO mask AP), ``mask_rcnn`` (the small Mask R-CNN: model,
  losses, training; its weights in ``weights/``), ``mask_rcnn_export`` (it in the TF Hub
  format, cached; which model notebook 3 loads; its command line), ``scenes`` (its generated
  scenes).
- The assignment: ``assignment`` (the exercise checks), ``grading`` (the assignment's rule:
  shapes, grade, pass mark; the instructors' grader is the ``grader`` package beside this one).
"""
