"""The CLIP guidance of diffusers' community clip_guided_stable_diffusion pipeline, written out once for the two
places that compute it in Python: tools/make_sd_fixtures.py (the parity fixture) and bench/sd/peer.py (the bench's
peer). Its cond_fn, for the DDIM-like schedulers: the UNet on the conditional text with gradients; x_0 from epsilon,
blended with the latents by fac = sqrt(1 - alpha_bar); decoded by the VAE; cut out and pooled to CLIP's input; CLIP's
image features; the spherical distance to the prompt's features; its gradient through the decoder and the UNet moves
epsilon by -sqrt(1 - alpha_bar) grad."""
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def features(out):
    """get_*_features' projected embeddings: a tensor in transformers 4, the output's pooler_output in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def spherical_dist_loss(x, y):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def resample(x, size):
    """One whole-image cut as clipguide resamples it (guidance/cutouts.h): area averaging when shrinking, as
    MakeCutouts pools, bicubic when growing."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] >= size and x.shape[-2] >= size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)


def make_cutouts(pixels, n, cut_size, cut_power=1.0):
    """The community pipeline's MakeCutouts: n random square cuts, each pooled to cut_size."""
    side_y, side_x = pixels.shape[2:4]
    max_size = min(side_x, side_y)
    min_size = min(side_x, side_y, cut_size)
    cutouts = []
    for _ in range(n):
        s = int(torch.rand([]) ** cut_power * (max_size - min_size) + min_size)
        ox = torch.randint(0, side_x - s + 1, ())
        oy = torch.randint(0, side_y - s + 1, ())
        cutouts.append(F.adaptive_avg_pool2d(pixels[:, :, oy:oy + s, ox:ox + s], cut_size))
    return torch.cat(cutouts)


def text_features(clip, ids):
    with torch.no_grad():
        f = features(clip.get_text_features(input_ids=ids))
    return f / f.norm(dim=-1, keepdim=True)


def cfg_prediction(pipe, latents, t, uncond, cond, scale):
    """The pipeline's classifier-free guidance: the unconditional and conditional halves of one UNet batch."""
    with torch.no_grad():
        both = pipe.unet(torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    u, c = both.chunk(2)
    return u + scale * (c - u)


def cond_fn(pipe, clip, latents, t, alpha_bar, cond, text_clip, noise_cfg, scale, cut, cutn):
    """The guided epsilon, the latents' gradient (-d loss / d latents) and the loss. `cut(image)` gives the
    [cutn, 3, S, S] cutouts of the decoded image in [0, 1]."""
    x = latents.detach().requires_grad_()
    mean = torch.tensor(CLIP_MEAN, device=latents.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=latents.device).view(1, 3, 1, 1)
    with torch.enable_grad():
        eps = pipe.unet(x, t, encoder_hidden_states=cond).sample
        b = 1 - alpha_bar
        x0 = (x - b ** 0.5 * eps) / alpha_bar ** 0.5
        fac = torch.sqrt(b)
        sample = x0 * fac + x * (1 - fac)
        image = pipe.vae.decode(sample / pipe.vae.config.scaling_factor).sample
        image = (image / 2 + 0.5).clamp(0, 1)
        emb = features(clip.get_image_features(pixel_values=(cut(image) - mean) / std))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        loss = spherical_dist_loss(emb, text_clip).view(cutn, latents.shape[0], -1).sum(2).mean(0).sum() * scale
        grads = -torch.autograd.grad(loss, x)[0]
    return noise_cfg - torch.sqrt(b) * grads, grads, loss.detach()
