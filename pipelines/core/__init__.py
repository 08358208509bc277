"""What two or more methods share: sampling (eps_theta, P_t, the schedule's quantities), schedulers, the one DDIM
inversion, scores and the guidance transforms, images, CLIP as a judge, metrics."""
