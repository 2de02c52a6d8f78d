using System.Globalization;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

/// <summary>
/// The executor's re-read before it writes: a plan's feature and property steps carry the value the planner read
/// (<see cref="DeploymentStep.PreviousFeatureValue"/>, <see cref="DeploymentStep.PreviousPropertyValue"/>), which a
/// rollback writes back. Just before the first feature write to a qube, every feature the plan writes on that qube is
/// read again (<see cref="IQubesBackend.ReadFeaturesNow"/>), and likewise its properties before the first property
/// write (<see cref="IQubesBackend.ReadPropertiesNow"/>); a value that is no longer the one the plan read stops the
/// rollout with <see cref="ErrorIds.PlanOutdated"/> before anything of that qube is written, and what the plan had
/// changed elsewhere is put back. Once per qube, not once per write, is enough: the writes of one qube follow each other
/// (nobody is asked anything between them), the first is checked just before it is sent, and the live backend's
/// re-read of a qube costs one call (a feature List; own values it keeps are current under the deployment lock, see
/// the live backend's ReadFeaturesNow). Firewall lists are read again by the backend itself just
/// before each Set (<see cref="IQubesBackend.ApplyFirewallEdit"/>), and files by the executor (<see cref="RolloutOptions.VerifyFiles"/>).
/// </summary>
internal sealed class WriteCheck(IQubesBackend backend, IReadOnlyList<DeploymentStep> steps)
{
    private readonly HashSet<(bool Feature, string Qube)> _checked = [];
    private bool _replanned;

    /// <summary>Throws <see cref="ErrorIds.PlanOutdated"/> when what <paramref name="step"/> is about to write changed since the plan read it.</summary>
    public void Before(DeploymentStep step)
    {
        if (step.Kind == DeploymentStepKind.Redeploy)
        {
            // A redeploy plans again on what it finds (and checks its own writes); steps after it were planned before
            // it and may meet its changes: they are not compared any more. (An ipv6 change has its redeploys last.)
            _replanned = true;
            return;
        }
        var feature = step.Kind is DeploymentStepKind.SetFeature or DeploymentStepKind.RemoveFeature;
        if (_replanned || !(feature || step.Kind == DeploymentStepKind.SetProperty) || !_checked.Add((feature, step.VMName))) return;

        // What the plan read: the value before the first step that writes each name on this qube (a later step on the
        // same name was planned on the value the earlier one leaves).
        var read = new Dictionary<string, (DeploymentStep Step, string? Value)>(StringComparer.Ordinal);
        foreach (var s in steps.Where(s => s.VMName == step.VMName))
        {
            if (feature && s.Kind is DeploymentStepKind.SetFeature or DeploymentStepKind.RemoveFeature) read.TryAdd(s.FeatureName!, (s, s.PreviousFeatureValue));
            else if (!feature && s.Kind == DeploymentStepKind.SetProperty) read.TryAdd(s.PropertyName!, (s, s.PreviousPropertyValue));
        }
        Func<string, string?> now;
        if (feature)
        {
            var features = backend.ReadFeaturesNow(step.VMName, read.Keys.ToList());
            now = name => features.GetValueOrDefault(name);
        }
        else
        {
            var properties = backend.ReadPropertiesNow(step.VMName);
            now = name => properties.TryGetValue(name, out var value) ? value : null;
        }
        foreach (var (name, (planned, value)) in read)
        {
            var current = now(name);
            if (current == value) continue;
            backend.Invalidate(); // what was kept is not what the system has: the next plan reads again
            var none = feature ? "not set" : "at its default";
            throw new QubesFirewallException(ErrorIds.PlanOutdated, FailureKind.InvalidOperation,
                $"{planned.Subject} is {Show(current, none)} now, {Show(value, none)} when this plan was made: someone else changed it meanwhile. Nothing of {step.VMName} was written. Run the command again to plan on what is there now.",
                step.VMName);
        }
    }

    private static string Show(string? value, string none) => value is null ? none : $"'{RuleGrammar.Printable(value)}'";

    /// <summary>The error of a file step that found the file changed since the plan read it.</summary>
    public static QubesFirewallException FileChanged(DeploymentStep step, string? current) =>
        new(ErrorIds.PlanOutdated, FailureKind.InvalidOperation,
            $"{step.Subject} changed since it was read for this plan ({Size(step.PreviousContent)} then, {Size(current)} now: someone else changed it meanwhile); it was left as it is. Run the command again.",
            step.Hop);

    private static string Size(string? content) => content is null ? "no file" : $"{content.Length.ToString(CultureInfo.InvariantCulture)} characters";
}
