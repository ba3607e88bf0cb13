"""Using predictions: serving-engine requests and answers, 3D lifting of points, drawing."""
