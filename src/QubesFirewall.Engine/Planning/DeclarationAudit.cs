using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// Declarations not bound to their qube: a copy (qvm-clone, a backup restore, a disposable copy its template's
/// features; the uuid it carries is another qube's) is never deployed and is reported with its two fixes (adopt it
/// with the cmdlet that declares it, or remove the feature); a legacy declaration (no uuid yet) is in force and
/// reported so it can be adopted.
/// </summary>
public sealed class DeclarationOwnershipCheck : IAuditCheck
{
    public const string Copied = "DeclarationCopied";
    public const string Legacy = "DeclarationLegacy";

    public string Name => "declaration-ownership";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var found = new List<(DeclarationOwnership Ownership, string Feature, (string Adopt, string Remove) Fixes)>();
        found.AddRange(PortForwardDeclaration.Read(qube).Where(d => d.Declared is not null).Select(d => (d.Ownership, d.FeatureName, DeclarationOwner.Fixes(d.Declared!))));
        found.AddRange(TcpBindingDeclaration.Read(qube).Where(d => d.Declared is not null).Select(d => (d.Ownership, d.FeatureName, DeclarationOwner.Fixes(d.Declared!))));
        found.AddRange(InterVmLinkDeclaration.Read(qube).Where(d => d.Declared is not null).Select(d => (d.Ownership, d.FeatureName, DeclarationOwner.Fixes(d.Declared!))));
        foreach (var (ownership, feature, (adopt, remove)) in found)
        {
            if (ownership == DeclarationOwnership.Copied)
                yield return new AuditFinding(AuditSeverity.Warning, qube.Name, Copied, null,
                    $"The declaration {feature} of '{qube.Name}' carries another qube's uuid: it was copied (qvm-clone, a backup restore or a disposable copy every feature) and is never deployed.",
                    $"Adopt it for '{qube.Name}': {adopt}; or remove the feature: {remove}");
            else if (ownership == DeclarationOwnership.Legacy && qube.Uuid is not null)
                yield return new AuditFinding(AuditSeverity.Info, qube.Name, Legacy, null,
                    $"The declaration {feature} of '{qube.Name}' carries no uuid (written by an earlier version of the module): it is in force, but a copy of it could not be told apart.",
                    $"Adopt it (binds it to '{qube.Name}''s uuid): {adopt}");
        }
    }
}
